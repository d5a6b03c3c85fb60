package broker

import "strings"

// The Redis Cluster key slot, computed here so that a channel's master is
// known without a round trip: CRC16 (XMODEM) of the key, or of its hash tag
// (the part between the first "{" and the next "}", when not empty), modulo
// 16384. This is the Cluster specification's HASH_SLOT.

// clusterSlots is the number of slots of a Redis Cluster.
const clusterSlots = 16384

// keySlot returns the slot of key (a key or a sharded channel).
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % clusterSlots)
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial 0), bit by bit: a
// channel name is short, and this runs once per subscribe.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// bySlot groups channels by slot, keeping their order within a slot and
// the groups in the order of their first channel.
func bySlot(channels []string) [][]string {
	if len(channels) == 1 {
		return [][]string{channels}
	}
	index := make(map[int]int, len(channels))
	var groups [][]string
	for _, ch := range channels {
		s := keySlot(ch)
		i, ok := index[s]
		if !ok {
			i = len(groups)
			index[s] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], ch)
	}
	return groups
}
