"""Package discovery (the rest of the metadata is in pyproject.toml).

Every Python package under publisher/ is found, so a new subpackage can never be left out of the
wheel. Four top-level folders ship inside the package under other names: channels/ as
publisher.channels, templates/ as publisher.templates (data only), config/ as publisher.defaults,
examples/ as publisher.examples (only the profiles' publisher.toml, so push can refuse their values).
"""

from setuptools import find_packages, setup

MAPPED = {"publisher.channels": "channels", "publisher.templates": "templates", "publisher.defaults": "config",
          "publisher.examples": "examples"}

packages = find_packages(include=["publisher", "publisher.*"])
for name, folder in MAPPED.items():
    packages += [name] + [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"publisher": "publisher", **MAPPED})
