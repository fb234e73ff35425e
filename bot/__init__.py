"""Flowstate ops bot: the frame (adapters, dispatcher, authorization, audit, store, config)."""
