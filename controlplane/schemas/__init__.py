"""Typed request and response schemas of the user API (pydantic only).

The API declares them as request bodies and ``response_model``; the SDK (controlplane.client)
returns them; the CLI renders their attributes. Agent messages live in controlplane.core.wire.
"""

from controlplane.schemas.admin import (Health, Queue, QueueCreate, QueueList,
                                        QueueUpdate, Team, TeamCreate, TeamList, Token,
                                        TokenCreate, TokenCreated, TokenList, TokenRevoked, User,
                                        UserCreate, UserList, Whoami)
from controlplane.schemas.controls import (AcceleratorHealthChange, BootstrapToken,
                                           BootstrapTokenCreate, BootstrapTokenInfo, BootstrapTokenList,
                                           SchedulerSettings, SchedulerSettingsUpdate)
from controlplane.schemas.base import ApiModel, Name, WriteModel
from controlplane.schemas.jobs import (Event, EventList, EventPage, Job, JobPage, JobRequest,
                                       PendingReason, PlacedSlice, PlacementMember)
from controlplane.schemas.nodes import (Accelerator, AcceleratorList, AcceleratorOnNode, Capacity,
                                        CapacityFigures, ModelCapacity, Node, NodeList)
from controlplane.schemas.problems import FieldError, Problem, problem_responses
from controlplane.schemas.usage import (JobUsage, RightSizing, SliceUsageSeries, UsageFigures,
                                        UsagePoint, UsageReport, UsageReportRow, UsageSummary,
                                        UsageTimeline)

__all__ = [
    "Accelerator", "AcceleratorHealthChange", "AcceleratorList", "AcceleratorOnNode", "ApiModel", "BootstrapToken",
    "BootstrapTokenCreate", "BootstrapTokenInfo", "BootstrapTokenList", "Capacity",
    "CapacityFigures", "Event", "EventList", "EventPage", "FieldError", "Health", "Job",
    "JobPage", "JobRequest", "ModelCapacity", "Name", "Node", "NodeList", "PendingReason",
    "PlacedSlice", "PlacementMember", "Problem", "Queue", "QueueCreate", "QueueList",
    "QueueUpdate", "SchedulerSettings", "SchedulerSettingsUpdate", "Team", "TeamCreate", "TeamList", "Token", "TokenCreate", "TokenCreated",
    "TokenList", "TokenRevoked", "User", "UserCreate", "UserList", "Whoami", "WriteModel",
    "problem_responses",
    "JobUsage", "RightSizing", "SliceUsageSeries", "UsageFigures", "UsagePoint", "UsageReport",
    "UsageReportRow", "UsageSummary", "UsageTimeline",
]
