"""The web page (HTML, ES modules, CSS), installed as the package ``stt_server.static`` and read through
importlib.resources; this file only makes the folder a package."""
