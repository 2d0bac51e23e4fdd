"""Reward models: the multi-view general process reward model (GRM), progress tracking, shaping."""
