import sys


def main() -> None:
    from llmos_cli.cli import run_app

    sys.exit(run_app())


if __name__ == "__main__":
    main()
