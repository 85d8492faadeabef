"""One module per page: what it asks the registry, what it renders, what its forms do."""
