"""Connector node: the gRPC service an agency runs beside its database."""
