"""Counts kept exactly beside the orders, so stats over everything need not read every order.

Every change sets its deltas in the order's `rollup` field in the same single-document write
as the change itself (`deltas`). The rollups feed (`service.store.feed`: one reader at a
time, under a fenced lease) reads them from the orders' change stream and adds them to
`order_counts` (per UTC day, status and currency: orders and their total), `status_counts`
(orders per status) and `customer_counts` (per customer: orders, and the kept revenue per
currency) in the transaction that moves its checkpoint past them, so each delta is counted
exactly once, whatever crashes or runs twice (`applier`). Rollups that were never built (or
were built by an earlier version) are built from the orders once, by one process under a
lease that fences its writes, which opens the feed at the build's snapshot (`build`,
`lease`). Stats without filters, and list totals by status, read the rollups plus the
deltas of the changes after the feed's checkpoint, in one snapshot (`reads`). The
collections, the build's marker and the indexes are in `schema`.
"""
