"""Errors of the topology: the catalogue, the structure registry, the kind policy, the live cluster's drift
(a cluster that fails an operation raises the bus's `ClusterError`)."""

from parcours.errors import ParcoursError


class TopologyError(ParcoursError):
    """Base of topology errors."""


class CatalogueError(TopologyError):
    """A catalogue, registry or policy file is invalid. The message names the file and line."""

    def __init__(self, path: object, line: int | None, message: str) -> None:
        self.path, self.line = path, line
        super().__init__(f"{path}:{line if line is not None else '?'}: {message}")


class DriftError(TopologyError):
    """The live cluster differs in a way `apply` cannot fix (fewer partitions, replication)."""


class RegistryError(TopologyError):
    """A change of the structure registry that cannot be made (unknown slug, bad record, keys)."""
