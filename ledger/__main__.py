"""``python -m ledger``: the ``qledger`` command line."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="qledger")
