"""Browser tests. A package, so that its conftest is not imported as the module "conftest",
which the API tests import their helpers from."""
