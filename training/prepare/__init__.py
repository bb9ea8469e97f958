"""Data preparation for pretraining: manifest -> Creative Commons, 48 kHz mono
WebDataset shards with an index, a report of every recording left out, and the
zero-shot split. Entry point: `training.prepare.run.prepare` (`animalclap-train prepare`).
"""
