"""Stores: one interface (``base.Store``), SQLite by default."""

from engine.store.base import Delivery, MessageQuery, NewMessage, Outcome, Store, open_store

__all__ = ["Delivery", "MessageQuery", "NewMessage", "Outcome", "Store", "open_store"]
