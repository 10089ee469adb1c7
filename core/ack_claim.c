/* A client's acknowledgement beyond its ack (core/ack_claim.h). */
#include "core/ack_claim.h"

#include <string.h>

#include "arpc/error.h"
#include "base/alloc.h"

uint32_t arpc_ack_claim_after(const struct arpc_ack_claim *cl, uint64_t seq)
{
    uint32_t lo = 0, hi = cl->ac_n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cl->ac_waiting[mid] <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool arpc_ack_claim_waits(const struct arpc_ack_claim *cl, uint64_t seq)
{
    uint32_t at = arpc_ack_claim_after(cl, seq);
    return at > 0 && cl->ac_waiting[at - 1] == seq;
}

int arpc_ack_claim_add(struct arpc_ack_claim *cl, uint64_t ack, uint64_t high, const uint64_t *waiting, uint32_t n,
                       uint64_t *freed, uint32_t *nfreed)
{
    *nfreed = 0;
    if (high <= ack)
        return ARPC_OK;
    /* A seq still waits only if neither claim acknowledged it: above the other's high, or on
     * both lists. What survives is a subset of the list of the claim with the higher high, so
     * at most ARPC_ACK_WAITING_MAX. */
    if (cl->ac_waiting == NULL) { /* one array for good: no allocation per claim */
        if ((cl->ac_waiting = arpc_malloc(ARPC_ACK_WAITING_MAX * sizeof(uint64_t))) == NULL)
            return ARPC_ENOMEM;
        cl->ac_cap = ARPC_ACK_WAITING_MAX;
    }
    const uint64_t *old = cl->ac_waiting;
    uint32_t n_old = cl->ac_n, i = 0, j = 0, k = 0;
    uint64_t list[ARPC_ACK_WAITING_MAX];
    while (j < n && waiting[j] <= ack)
        j++;
    while (i < n_old && old[i] <= ack)
        i++;
    while (i < n_old || j < n) {
        uint64_t seq; /* the smaller head of the two lists, and whether it still waits */
        bool waits;
        if (i < n_old && j < n && old[i] == waiting[j]) {
            seq = old[i++], j++;
            waits = true;
        } else if (j >= n || (i < n_old && old[i] < waiting[j])) {
            seq = old[i++];
            waits = seq > high;
            if (!waits && freed != NULL)
                freed[*nfreed] = seq; /* the new claim acknowledges it */
            *nfreed += !waits;
        } else {
            seq = waiting[j++];
            waits = seq > cl->ac_high;
        }
        if (waits && k == ARPC_ACK_WAITING_MAX)
            return ARPC_EINVAL; /* not two claims' lists (each checked: arpc_frame_ack_list_ok) */
        if (waits)
            list[k++] = seq;
    }
    memcpy(cl->ac_waiting, list, (size_t)k * sizeof(uint64_t));
    cl->ac_n = k;
    if (high > cl->ac_high)
        cl->ac_high = high;
    return ARPC_OK;
}

void arpc_ack_claim_trim(struct arpc_ack_claim *cl, uint64_t ack)
{
    if (cl->ac_high == 0)
        return;
    if (ack >= cl->ac_high) {
        arpc_ack_claim_fini(cl);
        return;
    }
    uint32_t k = arpc_ack_claim_after(cl, ack);
    if (k != 0) {
        memmove(cl->ac_waiting, cl->ac_waiting + k, (size_t)(cl->ac_n - k) * sizeof(uint64_t));
        cl->ac_n -= k;
    }
}

void arpc_ack_claim_fini(struct arpc_ack_claim *cl)
{
    arpc_free(cl->ac_waiting);
    *cl = (struct arpc_ack_claim){0};
}
