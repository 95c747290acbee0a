"""Method packages. `config.method = 'name'` selects `jaxrepr.methods.name`, whose `build(config)`
returns a `jaxrepr.methods.base.Method`."""
