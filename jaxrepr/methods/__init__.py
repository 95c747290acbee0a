"""Method packages. `config.method = 'name'` selects `jaxrepr.methods.name`, whose `build(config)`
returns a `jaxrepr.methods.base.Method`. The whole contract (required functions and every optional
hook) is written in jaxrepr/methods/base.py; the classifier package is the template to copy."""
