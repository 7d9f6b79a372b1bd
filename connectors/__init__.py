"""Everything that touches the outside world: sources and sinks, one module per system."""
