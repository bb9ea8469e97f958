"""Server-side training of AnimalCLAP models (torch, transformers).

The device runtime (`animalclap_edge`) never imports this package.
"""
