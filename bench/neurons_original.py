#!/usr/bin/python3
"""The original neuron system's storage layer (seed 003), re-implemented for bench/neurons.sh.

The baseline of SPEC section 4's neuron rows: the original program's Python code paths, kept as
they are because their per-row Python work is what the original costs. Re-implemented from the
original's sources (neuron_system/core/{neuron,synapse,vector3d}.py,
neuron_types/{knowledge,tool}_neuron.py, storage/{database,neuron_store,synapse_store,
serialization}.py), reduced to what the benchmark calls:

  DatabaseManager     thread-local sqlite3 connection (timeout 30, row_factory sqlite3.Row),
                      PRAGMA foreign_keys = ON, PRAGMA journal_mode = WAL, schema version 1 with
                      the original's tables and indexes; transaction() commits or rolls back.
  NeuronStore         batch_create: per neuron _neuron_to_row (neuron.to_dict(), vector as
                      np.array(..., float32).tobytes(), json.dumps of metadata and semantic_tags)
                      and one INSERT built from the row dict, all in one transaction;
                      list_all: SELECT * FROM neurons ORDER BY created_at, then _row_to_neuron per
                      row (np.frombuffer(...).tolist(), json.loads, NeuronTypeRegistry.deserialize).
  SynapseStore        batch_create: per synapse _validate_neuron_references (two SELECTs), then
                      _synapse_to_row and one INSERT, in one transaction; list_all as for neurons.
  SerializationManager save_all, load_all, calculate_checksum (sha256 of json.dumps(...,
                      sort_keys=True, default=str)), export_to_json (load_all, to_dict, checksum,
                      json.dump(indent=2)) and import_from_json (json.load, checksum, deserialize,
                      save_all).

The harness (main) adds only clocks (time.perf_counter) between the steps and remembers the last
checksum; nothing in the timed code paths differs from the original's. Debian's /usr/bin/python3
and python3-numpy only.

Usage (every mode prints "key value" lines, seconds unless the key says otherwise):
  neurons_original.py save SRC_DB WORKDIR [--reps R] [--synapse-reps S]
      loads SRC_DB with the original's load_all (printed as source_*), then per rep into a new database
      WORKDIR/save-<r>.db: NeuronStore.batch_create of every neuron (timed), and for the first S reps
      SynapseStore.batch_create of every synapse (timed), as save_all does.
  neurons_original.py load DB             load_all: list_all of neurons and of synapses (timed)
  neurons_original.py export DB OUT.json  export_to_json (timed, with its steps)
  neurons_original.py import IN.json DB   import_from_json into a new database DB (timed, with its
                                          steps)
"""

import argparse
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Set
from uuid import UUID, uuid4

import numpy as np

logger = logging.getLogger("neuron_system")


# ---------------------------------------------------------------- core/vector3d.py
@dataclass
class Vector3D:
    x: float
    y: float
    z: float

    def to_dict(self) -> dict:
        return {"x": self.x, "y": self.y, "z": self.z}

    @classmethod
    def from_dict(cls, data: dict) -> "Vector3D":
        return cls(x=data["x"], y=data["y"], z=data["z"])


# ---------------------------------------------------------------- core/neuron.py
class NeuronType(Enum):
    KNOWLEDGE = "knowledge"
    TOOL = "tool"
    MEMORY = "memory"
    SENSOR = "sensor"
    DECISION = "decision"
    REASONING = "reasoning"


class Neuron(ABC):
    def __init__(self):
        self.id: UUID = None
        self.position: Vector3D = None
        self.vector: np.ndarray = None
        self.neuron_type: NeuronType = None
        self.metadata: Dict[str, Any] = {}
        self.activation_level: float = 0.0
        self.created_at: datetime = None
        self.modified_at: datetime = None

    @abstractmethod
    def to_dict(self) -> Dict[str, Any]:
        pass

    @classmethod
    @abstractmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Neuron":
        pass

    def _base_to_dict(self) -> Dict[str, Any]:
        vector_data = None
        if self.vector is not None:
            if isinstance(self.vector, np.ndarray):
                vector_data = self.vector.tolist()
            elif isinstance(self.vector, (list, tuple)):
                vector_data = list(self.vector)
            else:
                try:
                    vector_data = np.asarray(self.vector).tolist()
                except Exception:
                    vector_data = None
        return {
            "id": str(self.id) if self.id else None,
            "type": self.neuron_type.value if self.neuron_type else None,
            "position": self.position.to_dict() if self.position else None,
            "vector": vector_data,
            "metadata": self.metadata,
            "activation_level": self.activation_level,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "modified_at": self.modified_at.isoformat() if self.modified_at else None,
        }

    def _base_from_dict(self, data: Dict[str, Any]):
        if data.get("id"):
            self.id = UUID(data["id"])
        if data.get("position"):
            self.position = Vector3D.from_dict(data["position"])
        if data.get("vector"):
            self.vector = np.array(data["vector"])
        self.metadata = data.get("metadata", {})
        self.activation_level = data.get("activation_level", 0.0)
        if data.get("created_at"):
            self.created_at = datetime.fromisoformat(data["created_at"])
        if data.get("modified_at"):
            self.modified_at = datetime.fromisoformat(data["modified_at"])


class NeuronTypeRegistry:
    _registry: Dict[str, type] = {}

    @classmethod
    def register(cls, neuron_type: str, neuron_class: type):
        if not issubclass(neuron_class, Neuron):
            raise ValueError(f"{neuron_class} must inherit from Neuron")
        cls._registry[neuron_type] = neuron_class

    @classmethod
    def deserialize(cls, data: Dict[str, Any]) -> Neuron:
        neuron_type = data.get("type")
        if neuron_type not in cls._registry:
            raise ValueError(f"Unknown neuron type: {neuron_type}")
        return cls._registry[neuron_type].from_dict(data)


# ---------------------------------------------------------------- neuron_types/knowledge_neuron.py
class KnowledgeNeuron(Neuron):
    def __init__(self, source_data: str = "", compression_ratio: float = 0.0,
                 semantic_tags: List[str] = None, position: Vector3D = None, vector: Any = None,
                 importance: float = 0.5, **kwargs):
        super().__init__()
        self.neuron_type = NeuronType.KNOWLEDGE
        self.source_data = source_data
        self.compression_ratio = compression_ratio
        self.semantic_tags = semantic_tags or []
        self.importance = importance
        if position is not None:
            self.position = position
        if vector is not None:
            self.vector = vector
        if not self.id:
            self.id = uuid4()
        if not self.created_at:
            self.created_at = datetime.now()
        if not self.modified_at:
            self.modified_at = datetime.now()

    def to_dict(self) -> Dict[str, Any]:
        base_dict = self._base_to_dict()
        base_dict.update({
            "source_data": self.source_data,
            "compression_ratio": self.compression_ratio,
            "semantic_tags": self.semantic_tags,
            "importance": self.importance,
        })
        return base_dict

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "KnowledgeNeuron":
        neuron = cls(
            source_data=data.get("source_data", ""),
            compression_ratio=data.get("compression_ratio", 0.0),
            semantic_tags=data.get("semantic_tags", []),
            importance=data.get("importance", 0.5),
        )
        neuron._base_from_dict(data)
        return neuron


NeuronTypeRegistry.register("knowledge", KnowledgeNeuron)


# ---------------------------------------------------------------- neuron_types/tool_neuron.py
class ToolNeuron(Neuron):
    def __init__(self, function_signature: str = "", executable_code: str = "",
                 input_schema: Dict[str, Any] = None, output_schema: Dict[str, Any] = None,
                 execution_count: int = 0, average_execution_time: float = 0.0,
                 activation_threshold: float = 0.5, **kwargs):
        super().__init__()
        self.neuron_type = NeuronType.TOOL
        self.function_signature = function_signature
        self.executable_code = executable_code
        self.input_schema = input_schema or {}
        self.output_schema = output_schema or {}
        self.execution_count = execution_count
        self.average_execution_time = average_execution_time
        self.activation_threshold = activation_threshold
        if not self.id:
            self.id = uuid4()
        if not self.created_at:
            self.created_at = datetime.now()
        if not self.modified_at:
            self.modified_at = datetime.now()

    def to_dict(self) -> Dict[str, Any]:
        base_dict = self._base_to_dict()
        base_dict.update({
            "function_signature": self.function_signature,
            "executable_code": self.executable_code,
            "input_schema": self.input_schema,
            "output_schema": self.output_schema,
            "execution_count": self.execution_count,
            "average_execution_time": self.average_execution_time,
            "activation_threshold": self.activation_threshold,
        })
        return base_dict

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ToolNeuron":
        neuron = cls(
            function_signature=data.get("function_signature", ""),
            executable_code=data.get("executable_code", ""),
            input_schema=data.get("input_schema", {}),
            output_schema=data.get("output_schema", {}),
            execution_count=data.get("execution_count", 0),
            average_execution_time=data.get("average_execution_time", 0.0),
            activation_threshold=data.get("activation_threshold", 0.5),
        )
        neuron._base_from_dict(data)
        return neuron


NeuronTypeRegistry.register("tool", ToolNeuron)


# ---------------------------------------------------------------- core/synapse.py
class SynapseType(Enum):
    KNOWLEDGE = "knowledge"
    TOOL_INPUT = "tool_input"
    TOOL_OUTPUT = "tool_output"


@dataclass
class Synapse:
    id: UUID = field(default_factory=uuid4)
    source_neuron_id: UUID = None
    target_neuron_id: UUID = None
    weight: float = 0.5
    usage_count: int = 0
    last_traversed: datetime = None
    synapse_type: SynapseType = SynapseType.KNOWLEDGE
    metadata: Dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=datetime.now)
    modified_at: datetime = field(default_factory=datetime.now)

    def __post_init__(self):
        self._validate_weight()

    def _validate_weight(self):
        if self.weight < -1.0 or self.weight > 1.0:
            raise ValueError(f"Synapse weight must be between -1.0 and 1.0, got {self.weight}")

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": str(self.id),
            "source_neuron_id": str(self.source_neuron_id) if self.source_neuron_id else None,
            "target_neuron_id": str(self.target_neuron_id) if self.target_neuron_id else None,
            "weight": self.weight,
            "usage_count": self.usage_count,
            "last_traversed": self.last_traversed.isoformat() if self.last_traversed else None,
            "synapse_type": self.synapse_type.value,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "modified_at": self.modified_at.isoformat() if self.modified_at else None,
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Synapse":
        synapse = cls(
            id=UUID(data["id"]) if data.get("id") else uuid4(),
            source_neuron_id=UUID(data["source_neuron_id"]) if data.get("source_neuron_id") else None,
            target_neuron_id=UUID(data["target_neuron_id"]) if data.get("target_neuron_id") else None,
            weight=data.get("weight", 0.5),
            usage_count=data.get("usage_count", 0),
            synapse_type=SynapseType(data.get("synapse_type", "knowledge")),
            metadata=data.get("metadata", {}),
        )
        if data.get("last_traversed"):
            synapse.last_traversed = datetime.fromisoformat(data["last_traversed"])
        if data.get("created_at"):
            synapse.created_at = datetime.fromisoformat(data["created_at"])
        if data.get("modified_at"):
            synapse.modified_at = datetime.fromisoformat(data["modified_at"])
        return synapse


# ---------------------------------------------------------------- storage/database.py
class DatabaseManager:
    SCHEMA_VERSION = 1

    def __init__(self, db_path: str = "neuron_system.db"):
        self.db_path = db_path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._initialized = False
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._initialize_schema()

    def _get_connection(self) -> sqlite3.Connection:
        if not hasattr(self._local, "connection") or self._local.connection is None:
            self._local.connection = sqlite3.connect(self.db_path, check_same_thread=False,
                                                     timeout=30.0)
            self._local.connection.execute("PRAGMA foreign_keys = ON")
            self._local.connection.execute("PRAGMA journal_mode = WAL")
            self._local.connection.row_factory = sqlite3.Row
        return self._local.connection

    @contextmanager
    def get_connection(self):
        conn = self._get_connection()
        try:
            yield conn
        except Exception as e:
            conn.rollback()
            logger.error(f"Database error: {e}")
            raise

    @contextmanager
    def transaction(self):
        conn = self._get_connection()
        try:
            yield conn
            conn.commit()
        except Exception as e:
            conn.rollback()
            logger.error(f"Transaction error: {e}")
            raise

    def _initialize_schema(self):
        with self._lock:
            if self._initialized:
                return
            with self.transaction() as conn:
                conn.execute("""
                    CREATE TABLE IF NOT EXISTS schema_version (
                        version INTEGER PRIMARY KEY,
                        applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
                    )
                """)
                cursor = conn.execute("SELECT MAX(version) as version FROM schema_version")
                row = cursor.fetchone()
                current_version = row["version"] if row["version"] is not None else 0
                if current_version < 1:
                    self._apply_migration_v1(conn)
                    conn.execute("INSERT INTO schema_version (version) VALUES (1)")
                self._initialized = True

    def _apply_migration_v1(self, conn: sqlite3.Connection):
        conn.execute("""
            CREATE TABLE IF NOT EXISTS neurons (
                id TEXT PRIMARY KEY,
                position_x REAL NOT NULL,
                position_y REAL NOT NULL,
                position_z REAL NOT NULL,
                vector BLOB,
                neuron_type TEXT NOT NULL,
                metadata TEXT,
                activation_level REAL DEFAULT 0.0,
                created_at TEXT NOT NULL,
                modified_at TEXT NOT NULL,
                source_data TEXT,
                compression_ratio REAL,
                semantic_tags TEXT,
                function_signature TEXT,
                executable_code TEXT,
                input_schema TEXT,
                output_schema TEXT,
                execution_count INTEGER DEFAULT 0,
                average_execution_time REAL DEFAULT 0.0,
                activation_threshold REAL DEFAULT 0.5
            )
        """)
        conn.execute("""
            CREATE TABLE IF NOT EXISTS synapses (
                id TEXT PRIMARY KEY,
                source_neuron_id TEXT NOT NULL,
                target_neuron_id TEXT NOT NULL,
                weight REAL NOT NULL CHECK(weight >= -1.0 AND weight <= 1.0),
                usage_count INTEGER DEFAULT 0,
                last_traversed TEXT,
                synapse_type TEXT NOT NULL,
                metadata TEXT,
                created_at TEXT NOT NULL,
                modified_at TEXT NOT NULL,
                FOREIGN KEY (source_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE,
                FOREIGN KEY (target_neuron_id) REFERENCES neurons(id) ON DELETE CASCADE
            )
        """)
        conn.execute("CREATE INDEX IF NOT EXISTS idx_neurons_position "
                     "ON neurons(position_x, position_y, position_z)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_neurons_type ON neurons(neuron_type)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_neurons_modified ON neurons(modified_at)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_synapses_source ON synapses(source_neuron_id)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_synapses_target ON synapses(target_neuron_id)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_synapses_weight ON synapses(weight)")
        conn.execute("CREATE INDEX IF NOT EXISTS idx_synapses_modified ON synapses(modified_at)")

    def close(self):
        if hasattr(self._local, "connection") and self._local.connection:
            self._local.connection.close()
            self._local.connection = None


# ---------------------------------------------------------------- storage/neuron_store.py
class NeuronStore:
    def __init__(self, db_manager: DatabaseManager):
        self.db = db_manager

    def list_all(self, limit: Optional[int] = None, offset: int = 0) -> List[Neuron]:
        with self.db.get_connection() as conn:
            query = "SELECT * FROM neurons ORDER BY created_at"
            if limit is not None:
                query += f" LIMIT {limit} OFFSET {offset}"
            cursor = conn.execute(query)
            rows = cursor.fetchall()
            return [self._row_to_neuron(dict(row)) for row in rows]

    def batch_create(self, neurons: List[Neuron]) -> int:
        if not neurons:
            return 0
        with self.db.transaction() as conn:
            count = 0
            for neuron in neurons:
                data = self._neuron_to_row(neuron)
                placeholders = ", ".join(["?" for _ in data])
                columns = ", ".join(data.keys())
                conn.execute(f"INSERT INTO neurons ({columns}) VALUES ({placeholders})",
                             list(data.values()))
                count += 1
        logger.info(f"Batch created {count} neurons")
        return count

    def _neuron_to_row(self, neuron: Neuron) -> Dict[str, Any]:
        neuron_dict = neuron.to_dict()
        position = neuron_dict.get("position", {})
        vector_bytes = None
        if neuron_dict.get("vector"):
            vector_array = np.array(neuron_dict["vector"], dtype=np.float32)
            vector_bytes = vector_array.tobytes()
        row = {
            "id": neuron_dict["id"],
            "position_x": position.get("x", 0.0),
            "position_y": position.get("y", 0.0),
            "position_z": position.get("z", 0.0),
            "vector": vector_bytes,
            "neuron_type": neuron_dict["type"],
            "metadata": json.dumps(neuron_dict.get("metadata", {})),
            "activation_level": neuron_dict.get("activation_level", 0.0),
            "created_at": neuron_dict["created_at"],
            "modified_at": neuron_dict["modified_at"],
        }
        if neuron_dict["type"] == "knowledge":
            row.update({
                "source_data": neuron_dict.get("source_data"),
                "compression_ratio": neuron_dict.get("compression_ratio"),
                "semantic_tags": json.dumps(neuron_dict.get("semantic_tags", [])),
            })
        elif neuron_dict["type"] == "tool":
            row.update({
                "function_signature": neuron_dict.get("function_signature"),
                "executable_code": neuron_dict.get("executable_code"),
                "input_schema": json.dumps(neuron_dict.get("input_schema", {})),
                "output_schema": json.dumps(neuron_dict.get("output_schema", {})),
                "execution_count": neuron_dict.get("execution_count", 0),
                "average_execution_time": neuron_dict.get("average_execution_time", 0.0),
                "activation_threshold": neuron_dict.get("activation_threshold", 0.5),
            })
        return row

    def _row_to_neuron(self, row: Dict[str, Any]) -> Neuron:
        if row.get("vector"):
            vector_array = np.frombuffer(row["vector"], dtype=np.float32)
            row["vector"] = vector_array.tolist()
        row["position"] = {
            "x": row.pop("position_x"),
            "y": row.pop("position_y"),
            "z": row.pop("position_z"),
        }
        if row.get("metadata"):
            row["metadata"] = json.loads(row["metadata"])
        row["type"] = row.pop("neuron_type")
        if row["type"] == "knowledge":
            if row.get("semantic_tags"):
                row["semantic_tags"] = json.loads(row["semantic_tags"])
        elif row["type"] == "tool":
            if row.get("input_schema"):
                row["input_schema"] = json.loads(row["input_schema"])
            if row.get("output_schema"):
                row["output_schema"] = json.loads(row["output_schema"])
        return NeuronTypeRegistry.deserialize(row)


# ---------------------------------------------------------------- storage/synapse_store.py
class SynapseStore:
    def __init__(self, db_manager: DatabaseManager):
        self.db = db_manager

    def list_all(self, limit: Optional[int] = None, offset: int = 0) -> List[Synapse]:
        with self.db.get_connection() as conn:
            query = "SELECT * FROM synapses ORDER BY created_at"
            if limit is not None:
                query += f" LIMIT {limit} OFFSET {offset}"
            cursor = conn.execute(query)
            rows = cursor.fetchall()
            return [self._row_to_synapse(dict(row)) for row in rows]

    def batch_create(self, synapses: List[Synapse]) -> int:
        if not synapses:
            return 0
        with self.db.transaction() as conn:
            count = 0
            for synapse in synapses:
                self._validate_neuron_references(synapse)
                data = self._synapse_to_row(synapse)
                placeholders = ", ".join(["?" for _ in data])
                columns = ", ".join(data.keys())
                conn.execute(f"INSERT INTO synapses ({columns}) VALUES ({placeholders})",
                             list(data.values()))
                count += 1
        logger.info(f"Batch created {count} synapses")
        return count

    def _validate_neuron_references(self, synapse: Synapse):
        with self.db.get_connection() as conn:
            cursor = conn.execute("SELECT id FROM neurons WHERE id = ?",
                                  (str(synapse.source_neuron_id),))
            if cursor.fetchone() is None:
                raise ValueError(f"Source neuron {synapse.source_neuron_id} does not exist")
            cursor = conn.execute("SELECT id FROM neurons WHERE id = ?",
                                  (str(synapse.target_neuron_id),))
            if cursor.fetchone() is None:
                raise ValueError(f"Target neuron {synapse.target_neuron_id} does not exist")

    def _synapse_to_row(self, synapse: Synapse) -> Dict[str, Any]:
        synapse_dict = synapse.to_dict()
        return {
            "id": synapse_dict["id"],
            "source_neuron_id": synapse_dict["source_neuron_id"],
            "target_neuron_id": synapse_dict["target_neuron_id"],
            "weight": synapse_dict["weight"],
            "usage_count": synapse_dict["usage_count"],
            "last_traversed": synapse_dict["last_traversed"],
            "synapse_type": synapse_dict["synapse_type"],
            "metadata": json.dumps(synapse_dict.get("metadata", {})),
            "created_at": synapse_dict["created_at"],
            "modified_at": synapse_dict["modified_at"],
        }

    def _row_to_synapse(self, row: Dict[str, Any]) -> Synapse:
        if row.get("metadata"):
            row["metadata"] = json.loads(row["metadata"])
        return Synapse.from_dict(row)


# ---------------------------------------------------------------- storage/serialization.py
class ChangeTracker:
    def __init__(self):
        self.modified_neurons: Set[UUID] = set()
        self.modified_synapses: Set[UUID] = set()
        self.deleted_neurons: Set[UUID] = set()
        self.deleted_synapses: Set[UUID] = set()
        self.last_save_time: Optional[datetime] = None

    def clear(self):
        self.modified_neurons.clear()
        self.modified_synapses.clear()
        self.deleted_neurons.clear()
        self.deleted_synapses.clear()
        self.last_save_time = datetime.now()


class SerializationManager:
    def __init__(self, db_manager: DatabaseManager, backup_dir: str = "backups"):
        self.db = db_manager
        self.neuron_store = NeuronStore(db_manager)
        self.synapse_store = SynapseStore(db_manager)
        self.change_tracker = ChangeTracker()
        self.backup_dir = Path(backup_dir)
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        self.marks = []            # harness: (step, perf_counter) at the steps of export/import
        self.last_checksum = None  # harness: the last calculate_checksum result

    def _mark(self, step):  # harness
        self.marks.append((step, time.perf_counter()))

    def save_all(self, neurons: Dict[UUID, Neuron], synapses: Dict[UUID, Synapse]) -> Dict[str, Any]:
        start_time = datetime.now()
        neuron_count = self.neuron_store.batch_create(list(neurons.values()))
        self._mark("save_neurons")
        synapse_count = self.synapse_store.batch_create(list(synapses.values()))
        self._mark("save_synapses")
        self.change_tracker.clear()
        duration = (datetime.now() - start_time).total_seconds()
        stats = {
            "neurons_saved": neuron_count,
            "synapses_saved": synapse_count,
            "duration_seconds": duration,
            "timestamp": datetime.now().isoformat(),
        }
        logger.info(f"Saved all data: {stats}")
        return stats

    def load_all(self) -> Dict[str, Any]:
        start_time = datetime.now()
        neuron_list = self.neuron_store.list_all()
        neurons = {neuron.id: neuron for neuron in neuron_list}
        self._mark("load_neurons")
        synapse_list = self.synapse_store.list_all()
        synapses = {synapse.id: synapse for synapse in synapse_list}
        self._mark("load_synapses")
        self.change_tracker.clear()
        duration = (datetime.now() - start_time).total_seconds()
        stats = {
            "neurons_loaded": len(neurons),
            "synapses_loaded": len(synapses),
            "duration_seconds": duration,
            "timestamp": datetime.now().isoformat(),
        }
        logger.info(f"Loaded all data: {stats}")
        return {"neurons": neurons, "synapses": synapses, "stats": stats}

    def calculate_checksum(self, data: Any) -> str:
        json_str = json.dumps(data, sort_keys=True, default=str)
        self.last_checksum = hashlib.sha256(json_str.encode()).hexdigest()  # harness: remembered
        return self.last_checksum

    def export_to_json(self, output_path: str) -> Dict[str, Any]:
        data = self.load_all()
        export_data = {
            "version": 1,
            "export_time": datetime.now().isoformat(),
            "neurons": [neuron.to_dict() for neuron in data["neurons"].values()],
            "synapses": [synapse.to_dict() for synapse in data["synapses"].values()],
            "stats": data["stats"],
        }
        self._mark("to_dict")
        export_data["checksum"] = self.calculate_checksum({
            "neurons": export_data["neurons"],
            "synapses": export_data["synapses"],
        })
        self._mark("checksum")
        with open(output_path, "w") as f:
            json.dump(export_data, f, indent=2)
        self._mark("json_dump")
        stats = {
            "neurons_exported": len(export_data["neurons"]),
            "synapses_exported": len(export_data["synapses"]),
            "file_path": output_path,
            "file_size_bytes": Path(output_path).stat().st_size,
        }
        logger.info(f"Exported to JSON: {stats}")
        return stats

    def import_from_json(self, input_path: str, verify_checksum: bool = True) -> Dict[str, Any]:
        with open(input_path, "r") as f:
            import_data = json.load(f)
        self._mark("json_load")
        if verify_checksum and "checksum" in import_data:
            calculated_checksum = self.calculate_checksum({
                "neurons": import_data["neurons"],
                "synapses": import_data["synapses"],
            })
            if calculated_checksum != import_data["checksum"]:
                raise ValueError("Checksum verification failed - data may be corrupted")
        self._mark("checksum")
        neurons = {}
        for neuron_data in import_data["neurons"]:
            neuron = NeuronTypeRegistry.deserialize(neuron_data)
            neurons[neuron.id] = neuron
        synapses = {}
        for synapse_data in import_data["synapses"]:
            synapse = Synapse.from_dict(synapse_data)
            synapses[synapse.id] = synapse
        self._mark("deserialize")
        save_stats = self.save_all(neurons, synapses)
        stats = {
            "neurons_imported": len(neurons),
            "synapses_imported": len(synapses),
            "save_stats": save_stats,
        }
        logger.info(f"Imported from JSON: {stats}")
        return stats


# ---------------------------------------------------------------- harness
def out(key, value):
    if isinstance(value, float):
        print(f"{key} {value:.6f}", flush=True)
    else:
        print(f"{key} {value}", flush=True)


def peak_rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def print_steps(prefix, t0, marks):
    prev = t0
    for step, t in marks:
        out(f"{prefix}_step_{step}_s", t - prev)
        prev = t


def cmd_save(a):
    # The source is loaded as cmd_load does (a fresh process, the original's load_all): its
    # figures are printed as "source_*" and are a load sample of SRC_DB.
    t0 = time.perf_counter()
    src = SerializationManager(DatabaseManager(a.src_db), backup_dir=os.path.join(a.workdir, "backups"))
    t1 = time.perf_counter()
    data = src.load_all()
    t2 = time.perf_counter()
    out("source_open_s", t1 - t0)
    print_steps("source", t1, src.marks)
    out("source_load_s", t2 - t1)
    src.db.close()
    neurons, synapses = list(data["neurons"].values()), list(data["synapses"].values())
    out("neurons", len(neurons))
    out("synapses", len(synapses))
    for r in range(1, a.reps + 1):
        path = os.path.join(a.workdir, f"save-{r}.db")
        if os.path.exists(path):
            sys.exit(f"neurons_original.py: {path} exists")
        db = DatabaseManager(path)
        mgr = SerializationManager(db, backup_dir=os.path.join(a.workdir, "backups"))
        t0 = time.perf_counter()
        n = mgr.neuron_store.batch_create(neurons)
        t1 = time.perf_counter()
        out("save_neurons_s", t1 - t0)
        if r <= a.synapse_reps and synapses:
            s = mgr.synapse_store.batch_create(synapses)
            out("save_synapses_s", time.perf_counter() - t1)
            assert s == len(synapses)
        assert n == len(neurons)
        db.close()
    out("peak_rss_kb", peak_rss_kb())


def cmd_load(a):
    t0 = time.perf_counter()
    mgr = SerializationManager(DatabaseManager(a.db), backup_dir=os.path.join(os.path.dirname(a.db), "backups"))
    t1 = time.perf_counter()
    data = mgr.load_all()
    t2 = time.perf_counter()
    out("open_s", t1 - t0)
    print_steps("load", t1, mgr.marks)
    out("load_s", t2 - t1)
    out("neurons", len(data["neurons"]))
    out("synapses", len(data["synapses"]))
    out("peak_rss_kb", peak_rss_kb())


def cmd_export(a):
    t0 = time.perf_counter()
    mgr = SerializationManager(DatabaseManager(a.db), backup_dir=os.path.join(os.path.dirname(a.out), "backups"))
    t1 = time.perf_counter()
    stats = mgr.export_to_json(a.out)
    t2 = time.perf_counter()
    out("open_s", t1 - t0)
    print_steps("export", t1, mgr.marks)
    out("export_s", t2 - t1)
    out("neurons", stats["neurons_exported"])
    out("synapses", stats["synapses_exported"])
    out("bytes", stats["file_size_bytes"])
    out("checksum", mgr.last_checksum)
    out("peak_rss_kb", peak_rss_kb())


def cmd_import(a):
    if os.path.exists(a.db):
        sys.exit(f"neurons_original.py: {a.db} exists (import_from_json into a new database)")
    t0 = time.perf_counter()
    mgr = SerializationManager(DatabaseManager(a.db), backup_dir=os.path.join(os.path.dirname(a.db), "backups"))
    t1 = time.perf_counter()
    stats = mgr.import_from_json(a.file)
    t2 = time.perf_counter()
    out("open_s", t1 - t0)
    print_steps("import", t1, mgr.marks)
    out("import_s", t2 - t1)
    out("neurons", stats["neurons_imported"])
    out("synapses", stats["synapses_imported"])
    out("checksum", mgr.last_checksum)
    out("peak_rss_kb", peak_rss_kb())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save")
    s.add_argument("src_db")
    s.add_argument("workdir")
    s.add_argument("--reps", type=int, default=1)
    s.add_argument("--synapse-reps", type=int, default=1)
    s.set_defaults(func=cmd_save)
    s = sub.add_parser("load")
    s.add_argument("db")
    s.set_defaults(func=cmd_load)
    s = sub.add_parser("export")
    s.add_argument("db")
    s.add_argument("out")
    s.set_defaults(func=cmd_export)
    s = sub.add_parser("import")
    s.add_argument("file")
    s.add_argument("db")
    s.set_defaults(func=cmd_import)
    a = p.parse_args()
    a.func(a)


if __name__ == "__main__":
    main()
