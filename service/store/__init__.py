"""MongoDB: documents <-> domain, queries, aggregations, indexes and the outbox."""
