from models.reasons import remove_clause_text
from schemas.narrative import Clause, Narrative, narrative_without


def test_occlusion_hides_a_clause_exactly_as_the_narrative_builder_does() -> None:
    narrative = Narrative(
        text="outbound wire; amount very large; beneficiary new to this customer",
        clauses=(
            Clause("event", "outbound wire"),
            Clause("amount", "amount very large"),
            Clause("counterparty", "beneficiary new to this customer"),
        ),
        features=(),
        version="test",
    )
    for clause in narrative.clauses:
        hidden = remove_clause_text(narrative, clause.id)
        assert hidden == narrative_without(narrative, clause.id)
        assert clause.text not in hidden
