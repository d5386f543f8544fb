"""`diamond-play serve`: play engines in a browser tab. An ASGI app (FastAPI on uvicorn) serves one page and one
WebSocket per player; each player's game is a `play.session.PlaySession` with the window's controls and app keys,
stepped in its own thread; frames go out as JPEG, the newest one wins."""
