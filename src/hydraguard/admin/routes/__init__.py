"""One router per resource; a service built later (campaigns, rules, intel, verification) adds its own."""
