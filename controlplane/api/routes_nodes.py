"""/api/v1 nodes, accelerators and capacity: any user reads, admins cordon/uncordon/drain."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from controlplane.api.deps import admin, get_db, user
from controlplane.db.database import Database
from controlplane.services import nodes
from controlplane.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["nodes"])


@router.get("/nodes")
def list_nodes(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.list_nodes(db)


@router.get("/nodes/{name}")
def get_node(name: str, _: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.get_node(db, name)


@router.post("/nodes/{name}/cordon")
def cordon(name: str, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=True)


@router.post("/nodes/{name}/uncordon")
def uncordon(name: str, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=False)


@router.post("/nodes/{name}/drain")
def drain(name: str, who: Principal = Depends(admin), db: Database = Depends(get_db)) -> dict:
    return nodes.set_cordon(db, who, name, cordon=True, drain=True)


@router.get("/accelerators")
def list_accelerators(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.list_accelerators(db)


@router.get("/capacity")
def capacity(_: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    return nodes.capacity(db)
