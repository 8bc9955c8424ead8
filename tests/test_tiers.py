"""The suite's own scheduling: a test's tier and group from its fixtures, and the order in which
xdist workers take the groups."""

import tiers


def test_a_tests_tier_is_its_most_demanding_fixtures():
    assert tiers.tier_of(["tmp_path"]) == "fast"
    assert tiers.tier_of(["tmp_path"], marked_slow=True) == "slow"
    assert tiers.tier_of(["registry", "make_app"]) == "sandbox"
    assert tiers.tier_of(["make_app", "fault_vms"]) == "faults"


def test_a_test_that_breaks_a_vm_shares_its_group_else_its_module_is_the_group():
    assert tiers.group_of(["make_app", "pg_fault_vm"], "tests/test_faults.py") == \
        "faults-postgres"
    assert tiers.group_of(["make_app"], "tests/test_remote.py") == "tests/test_remote.py"


def test_the_costliest_groups_go_first_and_each_keeps_its_order():
    tests = [("tests/test_a.py", "fast")] * 60 + [
        ("tests/test_b.py", "sandbox"), ("tests/test_b.py", "sandbox"),
        ("tests/test_demo.py", "sandbox"),
        ("faults", "faults"), ("tests/test_c.py", "docker"), ("faults", "faults"),
        ("faults", "faults")]
    order = tiers.heaviest_first(tests)
    assert sorted(order) == list(range(len(tests)))
    groups = [tests[i][0] for i in order]
    # the demo's measured time beats three fault tests' estimate; 60 quick tests come last
    assert groups[:6] == ["tests/test_demo.py", "faults", "faults", "faults",
                          "tests/test_b.py", "tests/test_b.py"]
    assert groups[6] == "tests/test_c.py" and set(groups[7:]) == {"tests/test_a.py"}
    faults = [i for i in order if tests[i][0] == "faults"]
    assert faults == sorted(faults)
