"""One scenario family per tool, keyed by the tool's name in the tool table's order."""

from __future__ import annotations

from codette.data.curriculum.tools.arithmetic import calculator
from codette.data.curriculum.tools.base import MakeScenario
from codette.data.curriculum.tools.files import list_directory, read_file, search_files, write_file
from codette.data.curriculum.tools.images import analyze_image
from codette.data.curriculum.tools.knowledge import query_knowledge_base
from codette.data.curriculum.tools.python import execute_python
from codette.data.curriculum.tools.tables import analyze_data
from codette.data.curriculum.tools.web import http_request, web_search


SCENARIOS: dict[str, MakeScenario] = {
    "read_file": read_file, "write_file": write_file, "list_directory": list_directory,
    "search_files": search_files, "execute_python": execute_python, "calculator": calculator,
    "analyze_data": analyze_data, "query_knowledge_base": query_knowledge_base, "http_request": http_request,
    "web_search": web_search, "analyze_image": analyze_image,
}
