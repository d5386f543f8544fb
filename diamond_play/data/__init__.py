"""Episode storage (one HDF5 file per episode, written atomically) shared by recording, collection and training."""

from diamond_play.data.episodes import Dataset, Episode, read_episode, write_episode

__all__ = ["Dataset", "Episode", "read_episode", "write_episode"]
