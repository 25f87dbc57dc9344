"""Long-running processes: persisted flows driven by events, delivery outcomes, timers and tasks.

Register flows explicitly: ``Syncline(config, flows=QUOTE_TO_CASH)``; the runtime then runs a
:class:`FlowEngine` next to the normalizer and the delivery workers. See ``docs/flows.md``.
"""

from syncline.flows.definition import (
    FINAL_STATES,
    DeliveryOutcome,
    Flow,
    FlowEvent,
    FlowRegistry,
    Resume,
    StepContext,
    TaskDecision,
    Transition,
)
from syncline.flows.engine import FlowEngine, TickStats
from syncline.flows.quote_to_cash import QUOTE_TO_CASH, amendment, derived_id, dunning, onboarding
from syncline.flows.settings import FlowConnections, FlowsSettings, LegalEntityPolicy
from syncline.flows.tasks import Task, TaskConflict, TaskError, TaskNotFound, claim_task, complete_task, list_tasks

__all__ = [
    "FINAL_STATES", "QUOTE_TO_CASH", "DeliveryOutcome", "Flow", "FlowConnections", "FlowEngine", "FlowEvent",
    "FlowRegistry", "FlowsSettings", "LegalEntityPolicy", "Resume", "StepContext", "Task", "TaskConflict",
    "TaskDecision", "TaskError", "TaskNotFound", "TickStats", "Transition", "amendment", "claim_task",
    "complete_task", "derived_id", "dunning", "list_tasks", "onboarding",
]
