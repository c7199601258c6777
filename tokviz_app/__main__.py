"""`python -m tokviz_app`."""

from tokviz_app.main import main

if __name__ in {"__main__", "__mp_main__"}:
    code = main()
    if code:  # `tokviz score` returns its exit code (a worker process re-importing this gets None)
        raise SystemExit(code)
