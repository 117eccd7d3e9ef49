"""The module path users know for the core classes: ``from savepoint.core import LightningModule``."""

from savepoint.datamodule import DataModule
from savepoint.module import TrainingModule

LightningModule = TrainingModule
LightningDataModule = DataModule

__all__ = ["DataModule", "LightningDataModule", "LightningModule", "TrainingModule"]
