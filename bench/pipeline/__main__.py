"""``python -m bench.pipeline``: see the package's docstring (``bench/pipeline/__init__.py``)."""
from bench.pipeline.cli import parse_args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.variant:
        from bench.pipeline.common import worker
        worker(args)
    else:
        from bench.pipeline.parent import parent
        parent(args)


if __name__ == "__main__":
    main()
