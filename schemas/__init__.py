"""Wire contracts of the orders service: commands, queries, replies and events (pydantic)."""

from orders_vocabulary.statuses import OrderStatus
from schemas.commands import (
    ACTION_NAMES,
    Billing,
    CancelOrder,
    CompleteOrder,
    OrderAction,
    OrderActionAdapter,
    OrderItem,
    PlaceOrder,
    UpdateMetadata,
    UpdateStatus,
)
from schemas.events import (
    OrderCommandRejected,
    OrderMetadataUpdated,
    OrderPlaced,
    OrderStatusChanged,
)
from schemas.orders import HistoryEntry, OrderView
from schemas.queries import GetOrder, ListOrders, ListStatuses, OrderFilters, OrderStatsQuery
from schemas.replies import (
    ErrorBody,
    ErrorReply,
    ListReply,
    OrderReply,
    Pagination,
    Reply,
    StatsReply,
    StatsView,
    StatusesReply,
)

__all__ = [
    "ACTION_NAMES",
    "Billing",
    "CancelOrder",
    "CompleteOrder",
    "ErrorBody",
    "ErrorReply",
    "GetOrder",
    "HistoryEntry",
    "ListOrders",
    "ListReply",
    "ListStatuses",
    "OrderAction",
    "OrderActionAdapter",
    "OrderCommandRejected",
    "OrderFilters",
    "OrderItem",
    "OrderMetadataUpdated",
    "OrderPlaced",
    "OrderReply",
    "OrderStatsQuery",
    "OrderStatus",
    "OrderStatusChanged",
    "OrderView",
    "Pagination",
    "PlaceOrder",
    "Reply",
    "StatsReply",
    "StatsView",
    "StatusesReply",
    "UpdateMetadata",
    "UpdateStatus",
]
