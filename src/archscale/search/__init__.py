"""The frontier search (the paper's Eq. 4) and the check of its frontier.

- frontier:       candidate shapes, scoring, Eq. 4 and the Pareto frontier, the GQA step.
- study:          the search of one study: its inputs, predictors, baselines, one entry point.
- plots:          the frontier figure.
- proposals:      the runs that would narrow the x* and r* intervals most per device-hour
                  (results/proposals.csv).
- design_loop:    one round of the closed loop: which proposals to train next, or why to stop.
- design_simulation: the loop against a uniform extension of the grid, on a known law
                  (tools/simulate_designs.py, docs/design-simulation/).
- frontier_check: the validation loop (search.validation): train and measure a few frontier
                  shapes the study never trained, and compare with the predictions.
"""
