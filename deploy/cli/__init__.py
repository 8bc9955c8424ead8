"""The Invoke and Fabric wiring only: `inv` tasks (tasks.py) and `fab` tasks (fabtasks.py and
the fab*.py modules it is split into). The logic they call lives in core/, local/, release/
and vm/.

The tasks import what they run inside their functions (the only function-level imports of
the package, tests/test_layout.py): `inv --list` and `fab --list` then load this folder only
and answer in well under half a second."""
