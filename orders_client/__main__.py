"""`python -m orders_client`: the `orders` command line (needs the `cli` extra)."""

from orders_client.cli import main

if __name__ == "__main__":
    main()
