"""The Invoke and Fabric wiring only: `inv` tasks (tasks.py) and `fab` tasks (fabtasks.py and
the fab*.py modules it is split into). The logic they call lives in core/, local/, release/
and vm/."""
