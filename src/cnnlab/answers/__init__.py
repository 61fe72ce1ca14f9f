"""The answer sheet (docs/ANSWERS.md): the exercise items as the sheet presents them (items),
running them resumably through their make targets (run), their compact results under
docs/results/ (collect), and the sheet written from those alone (sheet)."""
