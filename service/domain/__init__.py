"""The pure domain: statuses and transitions, money, the order and its changes. No I/O."""
