"""The NiceGUI page. Never imports torch: it talks to the engine through `tokviz_app.service`."""
