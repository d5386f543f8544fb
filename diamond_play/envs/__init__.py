"""Environments and their action spaces: Atari (ALE) and CS:GO's 51-dim action vector."""
