from factory.cli import entry

entry()
