"""The `wirecheck` command line."""
import click


@click.group()
def main() -> None:
    """wirecheck: SMB 3.1.1 transports emulated in user space."""
