"""Datasets: generated, bundled, or read from files the user has."""
from .base import Dataset
