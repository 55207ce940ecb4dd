"""Counts kept exactly beside the orders, so stats over everything need not read every order.

Every change pushes its deltas into the order's `rollups_pending` array in the same
single-document write as the change itself (`deltas`). The applier moves them into
`order_counts` (per UTC day, status and currency: orders and their total), `status_counts`
(orders per status) and `customer_counts` (per customer: orders, and the kept revenue per
currency) in a transaction that also removes them from the order, so each delta is counted
exactly once, whatever crashes or runs twice (`applier`). Rollups that were never built (or
were built by an earlier version) are built from the orders once, by one process under a
lease that fences its writes (`build`, `lease`). Stats without filters, and list totals by
status, read the rollups plus whatever is still pending, in one snapshot (`reads`). The
collections, the build's marker and the indexes are in `schema`.
"""
