import sys


def main() -> None:
    argv = sys.argv[1:]
    if argv in (["--version"], ["-V"]):
        # Fast path: answer without building the command tree.
        from llmos_cli import __version__

        sys.stdout.write(f"llmos {__version__}\n")
        sys.exit(0)
    from llmos_cli.cli import run_app

    sys.exit(run_app())


if __name__ == "__main__":
    main()
