"""The play app: keyboard/mouse controls, a pygame window (or headless run) around the world-model engine."""
