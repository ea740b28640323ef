from os import PathLike
from typing import List, Literal, Mapping, Optional, Sequence, TypedDict, Union

__version__: str

class Message(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str

class PromptInput(TypedDict):
    prompt: str
    response: str

class MessagesInput(TypedDict):
    messages: List[Message]
    response: str

Input = Union[PromptInput, MessagesInput]

class Score(TypedDict):
    reward: float
    task: str
    task_probs: dict[str, float]
    capabilities: dict[str, float]
    truncated: bool

class Ranked(Score):
    index: int
    response: str

class Info(TypedDict):
    name: Optional[str]
    tasks: dict[str, List[str]]

class DmoermError(Exception):
    """An invalid input, a bundle that does not load, or a non-finite score."""

class RewardModel:
    """A DMoERM or plain reward model from a bundle directory, a packed ``.dmoerm`` file or
    a Hugging Face reward-model directory."""

    def __init__(
        self,
        path: Union[str, "PathLike[str]"],
        device: Literal["auto", "cpu", "gpu"] = "auto",
        quantize: Optional[Literal["int8", "q4"]] = None,
    ) -> None: ...
    @property
    def device(self) -> str:
        """Where the model runs, in words."""
    def info(self) -> Info: ...
    def score(self, input: Union[Input, Mapping[str, object]]) -> Score: ...
    def score_batch(self, inputs: Sequence[Union[Input, Mapping[str, object]]]) -> List[Score]: ...
    def rank(self, prompt: Union[str, Sequence[Message]], candidates: Sequence[str]) -> List[Ranked]: ...
