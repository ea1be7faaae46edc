"""Checkpoints in the reference (SwissArmyTransformer) layout."""
from .sat import (load_checkpoint, load_into, load_state_dict, read_latest,
                  save_checkpoint, shard_paths)
