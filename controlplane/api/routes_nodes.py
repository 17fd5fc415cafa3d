"""/api/v1 nodes, accelerators and capacity: any user reads, admins cordon/uncordon/drain."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path

from controlplane.api.deps import admin, get_db, user
from controlplane.core.bounds import NO_NUL
from controlplane.db.database import Database
from controlplane.schemas import AcceleratorList, Capacity, Node, NodeList, problem_responses
from controlplane.schemas.problems import AUTHENTICATED
from controlplane.services import nodes
from controlplane.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["nodes"])
NODE = Path(max_length=253, pattern=NO_NUL, description="the node's registered hostname")
WRITE = problem_responses(*AUTHENTICATED, 404, 413, 422)


@router.get("/nodes", response_model=NodeList, responses=problem_responses(*AUTHENTICATED))
def list_nodes(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.list_nodes(db)


@router.get("/nodes/{name}", response_model=Node, responses=problem_responses(*AUTHENTICATED, 404, 422))
def get_node(name: str = NODE, _: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.get_node(db, name)


@router.post("/nodes/{name}/cordon", response_model=Node, responses=WRITE)
def cordon(name: str = NODE, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=True)


@router.post("/nodes/{name}/uncordon", response_model=Node, responses=WRITE)
def uncordon(name: str = NODE, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=False)


@router.post("/nodes/{name}/drain", response_model=Node, responses=WRITE)
def drain(name: str = NODE, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=True, drain=True)


@router.get("/accelerators", response_model=AcceleratorList, responses=problem_responses(*AUTHENTICATED))
def list_accelerators(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.list_accelerators(db)


@router.get("/capacity", response_model=Capacity, responses=problem_responses(*AUTHENTICATED))
def capacity(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.capacity(db)
