"""`python -m tokviz_app`."""

from tokviz_app.main import main

if __name__ in {"__main__", "__mp_main__"}:
    main()
