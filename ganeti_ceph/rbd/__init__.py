"""The volume service: RBD images as Ganeti volumes, whatever the front end."""
