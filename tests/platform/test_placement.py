"""The scheduler's reconciler side with stand-in controllers and a fake clock: instances start only on granted
slots, preemption evicts through the controller with events, the start-up gate, and what the meter is told."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

from inferstack.platform.metering import Meter
from inferstack.platform.placement import PlacementBook
from inferstack.platform.runtime import InstanceRecord
from inferstack.platform.store import Store
from inferstack.spec import Deployment, Inventory, default_inventory

INVENTORY = default_inventory().merged(Inventory.model_validate({"queues": [
    {"name": "q-four", "resource_group": "rg-default", "zone": "zone-a", "billing": "prepaid",
     "capacity": {"cpu-small": 4}}]}))


class Controller:
    """What the book needs of a RoleController: its instances, revision, count, evictions and wake-ups."""

    def __init__(self, key: tuple[str, str, str], book: PlacementBook):
        self.key, self.book = key, book
        self.records: list[InstanceRecord] = []
        self.replicas = 0
        self.evicted: list[str] = []

    def converge(self) -> None:
        """Start instances while the book admits them (as RoleController._converge does)."""
        while len([r for r in self.records if r.phase != "terminating"]) < self.replicas:
            instance = f"{'-'.join(self.key)}-{len(self.records) + 1}"
            if not self.book.admit(self.key, instance):
                return
            self.records.append(InstanceRecord(instance, 0, 1, 1, "r1", ready=True))

    def instances(self) -> list[InstanceRecord]:
        return list(self.records)

    def status(self) -> SimpleNamespace:
        return SimpleNamespace(revision="r1")

    def scale(self, replicas: int) -> None:
        self.replicas = replicas

    def evict(self, instance: str) -> bool:
        self.evicted.append(instance)
        self.records = [replace(r, phase="terminating") if r.id == instance else r for r in self.records]
        return True

    def wake(self) -> None:
        pass

    def gone(self) -> None:
        self.records = [r for r in self.records if r.phase != "terminating"]


def deployment(name: str, replicas: int, priority: int) -> Deployment:
    return Deployment.model_validate({
        "name": name, "image": {"preset": "inferstack/echo"}, "queue": "q-four", "compute_spec": "cpu-small",
        "replicas": replicas, "priority": priority, "rolling_update": {"max_unavailable": 25, "max_surge": 0},
        "subnet": "subnet-a", "security_group": "sg-default"})


def setup(tmp_path, clock):
    store = Store.open(tmp_path)
    for svc in ("batch", "online"):
        with store.transaction("test") as tx:
            tx.put("service", svc, {"name": svc})
            tx.put("deployment", "d", {}, parent=svc)
    controllers: dict = {}
    book = PlacementBook(store, controllers, clock=clock, meter=Meter(tmp_path / "meter.db", clock))
    book.set_inventory(INVENTORY)
    return store, controllers, book


def want(book: PlacementBook, controllers: dict, svc: str, dep: Deployment) -> Controller:
    key = (svc, "d", "main")
    controller = controllers.setdefault(key, Controller(key, book))
    book.demand(key, dep, dep.effective_roles()[0], dep.replicas or 0, service_uid=f"uid-{svc}", order=svc)
    controller.scale(book.replicas(key, dep.replicas or 0))
    return controller


def test_instances_start_only_on_granted_slots_and_a_higher_priority_preempts_through_the_controller(tmp_path):
    now = [100.0]
    store, controllers, book = setup(tmp_path, lambda: now[0])
    book.expect(["batch", "online"])
    low = want(book, controllers, "batch", deployment("d", 4, 3))
    book.run()
    low.converge()
    assert low.records == []  # the gate holds every grant until the services known at start are converged
    book.converged("batch")
    book.converged("online")
    book.run()
    low.converge()
    assert [r.id for r in low.records] == [f"batch-d-main-{i}" for i in range(1, 5)]
    assert book.instance_status("batch-d-main-1") == {"placement": {
        "queue": "q-four", "compute_spec": "cpu-small", "borrowed_from": None, "migrating": False}}

    high = want(book, controllers, "online", deployment("d", 2, 7))
    book.run()
    high.converge()
    assert high.records == [] and low.evicted == ["batch-d-main-4", "batch-d-main-3"]
    low.gone()
    book.run()
    high.converge()
    assert len(high.records) == 2
    (pending,) = book.role_status(("batch", "d", "main"))["pending"]
    assert (pending["count"], pending["reason"]) == (2, "Preempted")
    reasons = [(e["object"], e["reason"], e["type"]) for e in store.events() if e["action"] == "event"]
    assert ("services/batch/deployments/d", "Preempted", "Warning") in reasons
    assert ("services/online/deployments/d", "Preempting", "Normal") in reasons
    assert sum(r == "Scheduled" for _, r, _ in reasons) == 6

    now[0] += 3600
    book.run()
    report = book.meter.report("uid-batch")
    assert report["lines"][0]["reserved_slot_seconds"] == 4 * 3600  # prepaid: the 4 slots it holds, used or not
    assert report["lines"][0]["instance_seconds"] == 2 * 3600


def test_the_start_up_gate_opens_after_its_deadline_even_if_a_service_never_converges(tmp_path):
    now = [0.0]
    _, controllers, book = setup(tmp_path, lambda: now[0])
    book.expect(["batch", "broken"], within_s=15)
    low = want(book, controllers, "batch", deployment("d", 1, 5))
    book.converged("batch")
    book.run()
    low.converge()
    assert low.records == []
    now[0] = 16
    book.run()
    low.converge()
    assert len(low.records) == 1
