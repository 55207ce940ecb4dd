"""`python -m orders_client.cli`: the `orders` command line."""

from orders_client.cli import main

if __name__ == "__main__":
    main()
