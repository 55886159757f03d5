-- A long video's segments planned again: a worker that takes one of them under another key (a rolling
-- update left workers of two versions or settings) plans the video again under its own, rather than
-- fail the segment. Counted, so that workers that disagree for good (a node with other settings) fail
-- the video with the reason instead of planning it back and forth for ever.
ALTER TABLE jobs ADD COLUMN replans integer NOT NULL DEFAULT 0;
