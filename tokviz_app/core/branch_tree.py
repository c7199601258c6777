"""What every session shares: the ids and text views, and the branch tree.

A session built on this keeps `model` (with `decode` and `eos_token_ids`), `tokens` (the
active branch's list), `_ids` (prompt + active tokens), `_n_prompt`, `_bos_added` and `_closed`.
"""

from __future__ import annotations

from .errors import PositionError
from .types import Branch, TokenStep


class BranchTree:
    _branches: list[Branch]
    _active: int
    tokens: list[TokenStep]

    @property
    def token_ids(self) -> list[int]:
        """Prompt + generated ids (a copy)."""
        return list(self._ids)

    @property
    def text(self) -> str:
        """The exact decoded text of prompt and generated tokens (an added BOS is left out)."""
        ids = self._ids[1:] if self._bos_added else self._ids
        return self.model.decode(ids)

    @property
    def closed(self) -> bool:
        return self._closed

    def is_eos(self, step: TokenStep) -> bool:
        return step.token_id in self.model.eos_token_ids

    def _init_tree(self, snapshot_branches: list[Branch] | None = None, active_id: int = 0) -> None:
        if snapshot_branches is None:
            self._branches = [Branch(id=0, tokens=self.tokens, parent=None, split=0)]
            self._active = 0
        else:
            self._branches = [b.copy() for b in snapshot_branches]
            self._active = next(i for i, b in enumerate(self._branches) if b.id == active_id)
            self.tokens = self._branches[self._active].tokens

    @property
    def branches(self) -> list[Branch]:
        return list(self._branches)

    @property
    def active_branch(self) -> Branch:
        return self._branches[self._active]

    def _select_branch(self, branch_id: int) -> list[int]:
        """Make `branch_id` active; returns the ids of its whole text (prompt + tokens)."""
        target = next((i for i, b in enumerate(self._branches) if b.id == branch_id), None)
        if target is None:
            raise PositionError(f"There is no branch {branch_id}.")
        self._active = target
        self.tokens = self._branches[target].tokens
        return self._ids[: self._n_prompt] + [t.token_id for t in self.tokens]

    def _branch_off(self, position: int) -> None:
        """Keep the active branch as it is and continue in a new one sharing tokens[:position]."""
        parent = self._branches[self._active]
        branch = Branch(id=len(self._branches), tokens=list(parent.tokens[:position]), parent=parent.id,
                        split=position)
        self._branches.append(branch)
        self._active = len(self._branches) - 1
        self.tokens = branch.tokens

    def _keep_tokens(self, n_tokens: int) -> int:
        """Keep the first `n_tokens` generated tokens of the active branch (clamped); returns how many."""
        n_tokens = max(0, min(n_tokens, len(self.tokens)))
        del self._ids[self._n_prompt + n_tokens:]
        del self.tokens[n_tokens:]
        return n_tokens
